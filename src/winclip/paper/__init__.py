"""winclip.paper."""
