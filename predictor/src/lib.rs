//! Predicts when each task starts and ends (placeholder: the predictor issue fills it in).
