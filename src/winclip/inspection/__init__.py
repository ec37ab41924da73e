"""winclip.inspection."""
