"""tunescout_uploader: bulk ingest into a running TuneScout server over HTTP (of the service it imports
only tunescout.contract, and tunescout.audio to fingerprint on the client)."""
