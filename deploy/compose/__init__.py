"""The compose stack (compose.yaml) and its demo webhook receiver (`python -m deploy.compose.receiver`)."""
