"""The compose stack (compose.yaml) and its program job (program.py); its webhook receiver is the
one of processors/delivery/receiver.py."""
