"""Python layers run as pycaffe runs them (between ONNX Runtime segments), host layers
reshape what follows them, and the export cuts what ONNX cannot hold; plus the loader's
fork-era gaps: repeated layer names, in-place writes onto an input, V1 blocks in V2
files, unknown fields, fork schemas read at run time, duplicate registrations."""
from __future__ import annotations

import textwrap

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from zfcaffe.errors import UnsupportedLayerError, ZfcaffeError

USER_LAYER = textwrap.dedent('''
    import caffe
    import numpy as np

    class KeepPositive(caffe.Layer):
        """Rows of a 2-D blob whose first value is > threshold: a data-dependent size."""
        def setup(self, bottom, top):
            self.threshold = float(self.param_str or 0)

        def reshape(self, bottom, top):
            top[0].reshape(1, bottom[0].data.shape[1])

        def forward(self, bottom, top):
            x = bottom[0].data
            keep = x[x[:, 0] > self.threshold]
            top[0].reshape(*keep.shape)
            top[0].data[...] = keep
''')

NET = textwrap.dedent('''
    name: "pylayer"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 3 } } }
    layer { name: "double" type: "Power" bottom: "data" top: "double" power_param { scale: 2 } }
    layer { name: "keep" type: "Python" bottom: "double" top: "kept"
            python_param { module: "userlayers.keep" layer: "KeepPositive" param_str: "1.0" } }
    layer { name: "fc" type: "InnerProduct" bottom: "kept" top: "fc" inner_product_param { num_output: 2 } }
''')


@pytest.fixture
def pynet(tmp_path):
    pkg = tmp_path / "lib" / "userlayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "keep.py").write_text(USER_LAYER)
    proto = tmp_path / "net.prototxt"
    proto.write_text(NET)
    return proto, tmp_path / "lib"


def test_user_python_layer_runs_between_onnx_segments(pynet):
    proto, lib = pynet
    net = zfcaffe.Net(str(proto), python_path=[str(lib)])
    x = np.array([[1, 0, 0], [-1, 1, 1], [0.2, 5, 5], [3, 3, 3], [0.6, 0, 1], [2, 1, 0]], np.float32)
    out = net.forward(data=x)
    kept = 2 * x[2 * x[:, 0] > 1.0]
    np.testing.assert_array_equal(net.blobs["kept"].data, kept)
    w, b = net.params["fc"][0].data, net.params["fc"][1].data
    np.testing.assert_allclose(out["fc"], kept @ w.T + b, rtol=1e-6)
    assert net.layer_shapes["fc"] == (len(kept), 2)       # reshaped after the host layer, as Caffe does
    net.forward(data=x[:2])                                 # another size: fine again
    assert net.blobs["fc"].data.shape == (1, 2)


def test_python_layer_without_its_path_names_module_and_flag(pynet):
    proto, _ = pynet
    with pytest.raises(UnsupportedLayerError) as e:
        zfcaffe.Net(str(proto))
    msg = str(e.value)
    assert "userlayers.keep.KeepPositive" in msg and "--python-path" in msg and "userlayers/keep.py" in msg
    assert f"{proto}:5" in msg   # the NET text starts with a newline


def test_export_cuts_the_python_layer_and_names_it(pynet, tmp_path):
    proto, lib = pynet
    net = zfcaffe.Net(str(proto), python_path=[str(lib)])
    path = tmp_path / "net.onnx"
    net.to_onnx(str(path))
    cut = dict(net.export_cut)
    assert "Python code" in cut["keep"] and "fc" in cut
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["double"]
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(None, {"data": x})[0], 2 * x)


def test_repeated_layer_names_keep_their_name_and_get_unique_keys(build):
    net = build('layer { name: "r" type: "ReLU" bottom: "data" top: "a" }\n'
                'layer { name: "r" type: "Power" bottom: "a" top: "b" power_param { scale: 3 } }\n',
                {"data": (1, 1, 2, 2)})
    assert [l.name for l in net.layers] == ["r", "r"]
    assert list(net.layer_shapes) == ["r", "r~2"]
    x = np.array([[[[1, -1], [2, -2]]]], np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["b"], 3 * np.maximum(x, 0))


def test_layer_writing_in_place_onto_an_input(build):
    net = build('layer { name: "scale" type: "Power" bottom: "data" top: "data" power_param { scale: 2 } }\n'
                'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n', {"data": (1, 1, 2, 2)})
    x = np.array([[[[1, -1], [2, -2]]]], np.float32)
    np.testing.assert_array_equal(net.forward(data=x)["out"], np.maximum(2 * x, 0))
    np.testing.assert_array_equal(net.blobs["data"].data, 2 * x)    # pycaffe shows the blob after the write


def test_v1_block_in_a_v2_file_names_its_line_and_the_fix(tmp_path):
    p = tmp_path / "mix.prototxt"
    p.write_text('name: "m"\nlayer { name: "data" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n'
                 'layers { name: "relu" type: RELU bottom: "data" top: "r" }\n')
    with pytest.raises(ZfcaffeError, match=r"mix.prototxt:3: a V1 'layers \{ \}' block in a V2 file.*\"ReLU\""):
        zfcaffe.Net(str(p))


def test_unknown_field_names_layer_line_and_both_ways_on(tmp_path):
    p = tmp_path / "unk.prototxt"
    p.write_text('name: "u"\nlayer { name: "data" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n'
                 'layer { name: "foo" type: "Foo" bottom: "data" top: "f" foo_param { a: 1 } }\n')
    with pytest.raises(UnsupportedLayerError) as e:
        zfcaffe.Net(str(p))
    msg = str(e.value)
    assert "unk.prototxt:3" in msg and "'foo'" in msg and "foo_param" in msg
    assert "--caffe-proto" in msg and "--stop-before foo" in msg


def test_a_forks_schema_read_at_run_time(tmp_path):
    """--caffe-proto: a fork's caffe.proto (here a minimal one) read without a compiler."""
    from google.protobuf import text_format

    from zfcaffe import caffe_pb2
    from zfcaffe.io.schema import use_proto
    fork = tmp_path / "caffe.proto"
    fork.write_text('syntax = "proto2";\npackage caffe;\n'
                    'message LayerParameter {\n  optional FooParameter foo_param = 9001;\n}\n'
                    'message FooParameter {\n  optional float a = 1 [default = 0.5];\n'
                    '  enum Mode { X = 0; Y = 1; }\n  optional Mode mode = 2 [default = Y];\n}\n')
    saved = dict(vars(caffe_pb2))        # every class: use_proto replaces them all
    try:
        use_proto(str(fork))
        lp = text_format.Parse('name: "foo" type: "Foo" foo_param { a: 2 }', caffe_pb2.LayerParameter())
        assert lp.foo_param.a == 2 and lp.foo_param.mode == 1
        assert caffe_pb2.NetParameter().DESCRIPTOR.fields_by_name["layer"].message_type.fields_by_name["foo_param"]
    finally:
        vars(caffe_pb2).update(saved)


def test_registration_refuses_a_second_class_for_a_type():
    from zfcaffe.layers import Layer, register
    with pytest.raises(ValueError, match="registered twice"):
        @register("ReLU")
        class Again(Layer):
            pass


def test_shipped_schema_is_what_caffe_pb2_holds():
    """zfcaffe/caffe_pb2.py is tools/gen_proto.py's output for proto/ as committed."""
    import importlib.util
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_proto", root / "tools" / "gen_proto.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "zfcaffe" / "caffe_pb2.py").read_text() == gen.render(), "run python tools/gen_proto.py"


NAMED_NET = textwrap.dedent('''
    name: "named"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 3 } } }
    layer { name: "double" type: "Power" bottom: "data" top: "x" power_param { scale: 2 } }
    layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
    layer { name: "copy" type: "Split" bottom: "x" top: "x_copy" }
    layer { name: "keep" type: "Python" bottom: "x_copy" top: "kept"
            python_param { module: "userlayers.keep" layer: "KeepPositive" param_str: "1.0" } }
    layer { name: "keep2" type: "Python" bottom: "x" top: "kept2"
            python_param { module: "userlayers.keep" layer: "KeepPositive" param_str: "0.5" } }
''')


@pytest.mark.parametrize("all_blobs", [False, True])
def test_export_names_the_cut_layers_inputs_by_their_blobs(pynet, tmp_path, all_blobs):
    """The outputs a cut adds (what the left-out layer reads) carry their Caffe blob names
    where the key holds the blob's final value (`x` after the in-place ReLU, whose key is
    `relu`); the Power's output, which Caffe overwrites, keeps its key `double`."""
    _, lib = pynet
    proto = tmp_path / "named.prototxt"
    proto.write_text(NAMED_NET)
    net = zfcaffe.Net(str(proto), python_path=[str(lib)])
    path = tmp_path / "named.onnx"
    net.to_onnx(str(path), all_blobs=all_blobs)
    assert {n for n, _ in net.export_cut} == {"keep", "keep2"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert "x" in names and "x_copy" in names and not any(n in names for n in ("relu", "copy"))
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    got = dict(zip(names, sess.run(None, {"data": x})))
    np.testing.assert_array_equal(got["x"], np.maximum(2 * x, 0))
    np.testing.assert_array_equal(got["x_copy"], np.maximum(2 * x, 0))
    if all_blobs:
        np.testing.assert_array_equal(got["double"], 2 * x)


def test_export_with_nothing_left_is_one_error(pynet, tmp_path):
    proto, lib = pynet
    text = NET.replace('bottom: "double" top: "kept"', 'bottom: "data" top: "kept"')
    (tmp_path / "first.prototxt").write_text(text.replace('layer { name: "double"', '# layer { name: "double"'))
    net = zfcaffe.Net(str(tmp_path / "first.prototxt"), python_path=[str(lib)])
    with pytest.raises(ZfcaffeError, match=r"nothing to export to ONNX; every layer reads only the net's inputs "
                                           r"or what the export leaves out: .*layer 'keep' \(Python\)"):
        net.to_onnx(str(tmp_path / "first.onnx"))
    assert not (tmp_path / "first.onnx").exists()


SQUARE_LAYER = textwrap.dedent('''
    import caffe

    class Square(caffe.Layer):
        def setup(self, bottom, top):
            pass

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            self.x = bottom[0].data.copy()          # state the backward reads, as layers do
            top[0].data[...] = self.x ** 2

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = 2 * self.x * top[0].diff
''')

SQUARE_NET = textwrap.dedent('''
    name: "square"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 2 dim: 6 dim: 6 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
    layer { name: "sq" type: "%s" bottom: "conv1" top: "sq" %s }
    layer { name: "conv2" type: "Convolution" bottom: "sq" top: "conv2"
            convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
''')


def test_python_layers_own_backward_runs_in_projections(tmp_path):
    pkg = tmp_path / "lib" / "sqlayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "square.py").write_text(SQUARE_LAYER)
    (tmp_path / "py.prototxt").write_text(SQUARE_NET % ("Python", 'python_param { module: "sqlayers.square" '
                                                                  'layer: "Square" }'))
    (tmp_path / "power.prototxt").write_text(SQUARE_NET % ("Power", "power_param { power: 2 }"))
    py = zfcaffe.Net(str(tmp_path / "py.prototxt"), python_path=[str(tmp_path / "lib")], allow_missing_weights=True)
    ref = zfcaffe.Net(str(tmp_path / "power.prototxt"), allow_missing_weights=True)
    for name in ("conv1", "conv2"):
        for blob_py, blob_ref in zip(py.params[name], ref.params[name]):
            blob_ref.data = np.array(blob_py.data)
    x = np.random.default_rng(0).normal(size=(3, 2, 6, 6)).astype(np.float32)
    py.forward(data=x)
    ref.forward(data=x)
    np.testing.assert_allclose(py.blobs["conv2"].data, ref.blobs["conv2"].data, rtol=1e-5, atol=1e-6)
    units = [(2, 1, 1, 0), (0, 0, 1, 1)]                      # rows of other images than the first
    np.testing.assert_allclose(py.project_many("conv2", units, "backprop"),
                               ref.project_many("conv2", units, "backprop"), rtol=1e-5, atol=1e-6)


def test_python_layer_without_backward_says_so(pynet):
    proto, lib = pynet
    net = zfcaffe.Net(str(proto), python_path=[str(lib)])
    net.forward(data=np.ones((6, 3), np.float32) * 2)
    with pytest.raises(ZfcaffeError, match="defines no backward"):
        net.project("fc", (0, 1), "backprop")
