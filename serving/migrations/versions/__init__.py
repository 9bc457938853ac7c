"""The app store's schema revisions, oldest first (each file says what it changes)."""
