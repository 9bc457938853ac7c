"""Search: tokenizer (Chinese + ASCII) and, later, the BM25 index, suggestions and hot searches."""
