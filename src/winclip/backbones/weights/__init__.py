"""winclip.backbones.weights."""
