"""The shared vocabulary at the bottom of minirec's layers: text analysis and the names and limits
that training, the feature store, search and serving must agree on. It imports nothing of minirec."""
