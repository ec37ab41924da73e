"""winclip.method."""
