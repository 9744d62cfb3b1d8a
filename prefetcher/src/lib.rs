//! Stages task inputs into the cache ahead of each GPU task (placeholder: the prefetcher issue fills it in).
