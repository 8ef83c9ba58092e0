"""The few raw-TensorFlow helpers that `keras.ops` lacks (DESIGN.md §1)."""
