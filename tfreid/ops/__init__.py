"""The few raw-TensorFlow helpers that `keras.ops` lacks (layers use `keras.ops` otherwise)."""
