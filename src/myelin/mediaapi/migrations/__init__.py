"""Schema migrations of the media repository (media metadata and cached thumbnails)."""
