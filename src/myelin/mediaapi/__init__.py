"""Media repository: uploads, downloads, thumbnails, stored as files in the data directory."""
