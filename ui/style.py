"""How the two models are named and coloured on every page (AE orange, VAE blue)."""

MODEL_LABELS = {"ae": "AE", "vae": "VAE"}
MODEL_COLORS = {"ae": "#f08c00", "vae": "#4c6ef5"}
