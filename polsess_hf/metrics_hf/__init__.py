"""Local 🤗 ``evaluate`` metric modules shipped with polsess_hf (load them by path, see ``polsess_hf.metrics``)."""
