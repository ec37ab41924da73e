"""The inspection station: HTTP API and web page over the library (`winclip serve`; needs the `serve` extra)."""
