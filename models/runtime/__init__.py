"""How encoders run: micro-batching, forward streams, torch threads, number formats
(precision) and ONNX Runtime towers. Knows no particular model: it runs what it is handed."""
