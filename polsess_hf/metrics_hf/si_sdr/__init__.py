# Makes the metric script part of the installed package; evaluate.load() reads si_sdr.py by path, not by import.
