"""Session images: the recipe (``recipe``) and the offline builder (``builder``)."""
