"""winclip.paper.report."""
