"""One controller per section of the admin page."""
