# Runs a test-vector file through its operations and returns one result per vector.
#
# A vector file is JSON: {"ops": "<module>", "vectors": [{"name", "op", "in", "out"|"error"}]}.
# ``ops`` names a module in protocols/vectors whose OPS dict maps op names to functions taking
# the vector's "in" and returning JSON-able data (bytes as hex strings). The result per vector is
# {"out": ...} or {"error": <ProtocolError code>}; the test suite compares the results of both
# runtimes with each other and with the file.
import json

from protocols.errors import ProtocolError


def load(path):
    with open(path) as f:
        return json.load(f)


def ops_of(doc):
    module = __import__("protocols.vectors." + doc["ops"], None, None, ["OPS"])
    return module.OPS


def run_doc(doc):
    ops = ops_of(doc)
    results = []
    for vector in doc["vectors"]:
        try:
            results.append({"out": ops[vector["op"]](vector["in"])})
        except ProtocolError as e:
            results.append({"error": e.code})
    return results


def run_file(path):
    return run_doc(load(path))


def main(path):
    # One line of JSON on stdout: what the test harness reads back from MicroPython.
    print(json.dumps(run_file(path)))
