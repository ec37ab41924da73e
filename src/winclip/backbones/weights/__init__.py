"""Checkpoints: `locate` finds them (open_clip's order, offline first), `checkpoints` reads them without
running their code, `carry` fetches and verifies them for an offline machine (`winclip weights`)."""
