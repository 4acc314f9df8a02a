"""Convert a thesis checkpoint to a Hugging Face model folder.

    python examples/convert_thesis_checkpoint.py CKPT.pt OUT_DIR [--push-to-hub user/repo]

Then ``AutoModel.from_pretrained(OUT_DIR)`` (after ``import polsess_hf``) or
``AutoModel.from_pretrained(OUT_DIR, trust_remote_code=True)`` without it.
"""

from polsess_hf.conversion import main

if __name__ == "__main__":
    main()
