"""Corpus curation: raw sources -> filtered -> deduplicated -> decontaminated -> training mixture."""
