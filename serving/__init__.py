"""Serving the export repository: a TF Serving client, a development server, `kerasline serve`."""
