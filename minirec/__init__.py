"""minirec: recommendation and search for merchant mini-programs."""
