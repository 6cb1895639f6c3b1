"""tunescout_uploader: bulk ingest into a running TuneScout server over HTTP (imports nothing of tunescout)."""
