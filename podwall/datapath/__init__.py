"""The datapath: decoding, the flow table with TCP reassembly, and the pure engine."""
