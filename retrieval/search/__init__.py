"""Describing and searching a collection: extract (batched, multi-scale descriptors), index
(faiss), qe (α-QE, DBA), collection (index_images, search_images), hit_pages (HTML and PNG)."""
