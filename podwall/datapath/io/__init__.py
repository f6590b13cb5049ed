"""The only I/O of the datapath: capture readers and writers (taps and NFQUEUE later)."""
