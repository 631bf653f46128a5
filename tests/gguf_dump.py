"""Dump a GGUF file as llama.cpp's own Python reader (PyPI `gguf`) sees it: every
metadata key with its value, every tensor with its type and shape, as JSON."""
import json
import sys

from gguf import GGUFReader, GGUFValueType

r = GGUFReader(sys.argv[1])
fields = {}
for name, f in r.fields.items():
    if name.startswith("GGUF."):
        continue
    t = f.types[0] if f.types else None
    if t == GGUFValueType.ARRAY:
        items = [f.contents(i) for i in range(len(f.data))]
        fields[name] = {"array": len(items), "first": items[0] if items else None, "last": items[-1] if items else None}
    else:
        v = f.contents()
        fields[name] = v
tensors = [
    {"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape], "bytes": int(t.n_bytes)}
    for t in r.tensors
]
json.dump({"fields": fields, "tensors": tensors}, sys.stdout, default=float)
