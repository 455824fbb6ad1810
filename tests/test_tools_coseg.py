"""tools/coseg.py through main(argv), in-process: outputs, the quality it reaches on a generated set,
its JSON = the Python API's report, concept files, factors numbered from 0, mixed image modes,
errors; and one subprocess run for what only a subprocess shows (the script runs on its own)."""
import contextlib
import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error, run_tool
from PIL import Image

import cosegment
from cosegment.annotations import load_coseg_folder, load_mask
from cosegment.concept_file import load_concepts, save_concepts
from cosegment.metrics import jaccard
from retrieval.core.backbone import build_backbone
from retrieval.core.cli import main_wrapper
from retrieval.core.errors import ConfigError, DataError, ModelMismatchError
from retrieval.toy.coseg_sets import make_coseg_sets

# Measured on the toy set below (1 set, 4 images of 64 px, 2 parts, seed 2; k = 2 at 160 px):
# Jaccard 0.65 (an all-image mask scores 0.37), CorLoc 0.75, part mIoU 0.40; projected on the
# saved concepts, 6 resized / grey / CMYK copies: Jaccard 0.61; the other factor as the object: 0.10.
TOOL_JACCARD = 0.55
TOOL_CORLOC = 0.5
TOOL_PART_MIOU = 0.3
PROJECTED_JACCARD = 0.5
ARGS = ["--k", "2", "--image-size", "160"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("coseg_tool", REPO / "tools" / "coseg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOOL = _load_tool()


def coseg(*argv) -> str:
    """Run tools/coseg.py's main(argv) in-process; returns what it printed on stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert TOOL.main([str(a) for a in argv]) == 0
    return buf.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tool sets the process's thread count (GEMSEG_THREADS, else every core); in-process, keep
    it at one thread (small images; a busy machine makes threads crawl) and restore it afterwards."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEMSEG_THREADS", "1")
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("coseg")
    make_coseg_sets(root, n_sets=1, images_per_set=4, image_size=64, n_parts=2, seed=2)
    return root


@pytest.fixture(scope="module")
def run(toy, tmp_path_factory):
    """One full run of the tool: (JSON document, output folder, concept file)."""
    tmp = tmp_path_factory.mktemp("coseg_run")
    doc = json.loads(coseg("--images", toy / "images", *ARGS, "--masks", toy / "masks", "--parts",
                           "--part-masks", toy / "parts", "--out", tmp / "out", "--json",
                           "--save-concepts", tmp / "concepts.pt"))
    return doc, tmp / "out", tmp / "concepts.pt"


def test_run_writes_everything(run, toy):
    doc, out, concepts = run
    (s,) = doc["sets"]
    assert s["images"] == 4 and "corloc" in s and "part_miou" in s
    assert set(doc["timings"]) >= {"loading", "backbone", "factorisation", "model"}
    assert doc["layer"] == "block14" and doc["k"] == 2 and doc["image_size"] == 160
    stems = sorted(p.stem for p in (toy / "images" / "set00").iterdir())
    for stem in stems:
        m = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert m.shape == (64, 64) and set(np.unique(m)) <= {0, 255}
        lab = np.asarray(Image.open(out / "parts" / f"{stem}.png"))
        assert lab.shape == (64, 64) and lab.max() <= 2   # 0 = background, j + 1 = factor j
        assert (out / "overlays" / f"{stem}.jpg").is_file()
        assert (m > 0).sum() == (lab > 0).sum()
    boxes = json.loads((out / "boxes.json").read_text())["images"]
    assert sorted(boxes) == stems
    html = (out / "index.html").read_text()
    assert all(f"masks/{s}.png" in html for s in stems)
    assert doc["boxes"][stems[0]] == boxes[stems[0]]["box"]
    assert concepts.is_file() and doc["concepts"] == str(concepts)


def test_quality_on_the_generated_set(run, toy):
    doc, out, _ = run
    (s,) = doc["sets"]
    assert s["jaccard"] >= TOOL_JACCARD, s
    assert s["corloc"] >= TOOL_CORLOC, s
    assert s["part_miou"] >= TOOL_PART_MIOU, s
    # far above the trivial answer (the whole image as the object), and recomputed from the masks
    gts = {p.stem: load_mask(p) for p in (toy / "masks" / "set00").iterdir()}
    whole = np.mean([g.mean() for g in gts.values()])
    assert s["jaccard"] > whole + 0.15, (s["jaccard"], whole)
    mine = [jaccard(np.asarray(Image.open(out / "masks" / f"{stem}.png")) > 0, g) for stem, g in gts.items()]
    assert np.mean(mine) == pytest.approx(s["jaccard"], abs=1e-6)


def test_json_is_the_python_api_report(run, toy):
    doc, _, _ = run
    bb = build_backbone("efficientnet_lite0").eval()
    said = []
    report = cosegment.cosegment(toy / "images", backbone=bb, config=cosegment.CosegConfig(k=2, image_size=160),
                                 masks=toy / "masks", parts=True, part_masks=toy / "parts", progress=said.append)
    assert len(said) == 1 and said[0].startswith("set set00: 4 images")
    api = report.as_dict()
    assert list(api) == [k for k in doc if k != "concepts"]
    for key in ("images", "k", "layer", "image_size", "backbone", "factorizer", "fingerprint", "failures"):
        assert api[key] == doc[key], key
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in api["sets"]] == \
           [{k: v for k, v in s.items() if k != "seconds"} for s in doc["sets"]]
    assert api["out"] is None and api["boxes"] is None and report.results[0].masks[0].shape == (64, 64)


@pytest.mark.slow
def test_factors_are_numbered_from_0_in_text_option_and_concept_file(run, toy):
    doc, _, concepts = run
    chosen = doc["sets"][0]["object_factors"]
    assert load_concepts(concepts).object_factors == chosen  # the file numbers them as the tool prints
    (other,) = set(range(2)) - set(chosen)
    base = ["--images", toy / "images", *ARGS, "--masks", toy / "masks", "--no-write"]
    text = coseg(*base, "--object-factor", ",".join(map(str, chosen)))
    assert f"object factor(s) {chosen}," in text
    assert f"Jaccard {doc['sets'][0]['jaccard']:.3f}" in text  # the same masks as the automatic choice
    flipped = json.loads(coseg(*base, "--object-factor", str(other), "--json"))["sets"][0]
    assert flipped["object_factors"] == [other] and flipped["jaccard"] < doc["sets"][0]["jaccard"] - 0.2
    with pytest.raises(ConfigError, match="numbered from 0"):
        coseg(*base, "--object-factor", "2")
    with pytest.raises(ConfigError, match="--object-factor"):
        coseg(*base, "--object-factor", "one")


def test_learn_concepts_saves_what_the_tool_saves(run, toy, tmp_path):
    _, _, concepts = run
    bb = build_backbone("efficientnet_lite0").eval()
    paths = [it.image for it in load_coseg_folder(toy / "images")["set00"]]
    learned = cosegment.learn_concepts(bb, paths, k=2, image_size=160, save_to=tmp_path / "c.pt")
    saved, mine = load_concepts(concepts), load_concepts(tmp_path / "c.pt")
    np.testing.assert_array_equal(learned.H, saved.H)
    assert learned.object_factors == saved.object_factors == mine.object_factors
    assert (mine.layer, mine.image_size, mine.fingerprint) == (saved.layer, saved.image_size, saved.fingerprint)


@pytest.mark.slow
def test_projection_on_saved_concepts_with_mixed_modes(run, toy, tmp_path):
    _, _, concepts = run
    mixed, gt = tmp_path / "mixed", tmp_path / "gt"
    mixed.mkdir()
    gt.mkdir()
    for i, src in enumerate(sorted((toy / "images" / "set00").iterdir())[:2]):
        img, m = Image.open(src), Image.open(toy / "masks" / "set00" / f"{src.stem}.png")
        img.convert("L").save(mixed / f"gray{i}.png")
        m.save(gt / f"gray{i}.png")
        img.resize((80, 48)).convert("CMYK").save(mixed / f"cmyk{i}.jpg")
        m.resize((80, 48), Image.NEAREST).save(gt / f"cmyk{i}.png")
        img.resize((40, 72)).save(mixed / f"tall{i}.jpg")
        m.resize((40, 72), Image.NEAREST).save(gt / f"tall{i}.png")
    doc = json.loads(coseg("--images", mixed, "--concepts", concepts, "--masks", gt, "--out", tmp_path / "o", "--json"))
    (s,) = doc["sets"]
    assert doc["factorizer"] == "projection" and doc["k"] == 2 and doc["image_size"] == 160  # from the file
    assert s["object_factors"] == load_concepts(concepts).object_factors
    assert s["images"] == 6 and s["jaccard"] >= PROJECTED_JACCARD, s
    assert np.asarray(Image.open(tmp_path / "o" / "masks" / "cmyk0.png")).shape == (48, 80)
    assert np.asarray(Image.open(tmp_path / "o" / "masks" / "tall0.png")).shape == (72, 40)

    # concepts made by another backbone: a ModelMismatchError (one line, exit 2 from the tool)
    c = load_concepts(concepts)
    other = save_concepts(tmp_path / "other.pt", c.H, "0123456789abcdef", c.layer, object_factors=c.object_factors)
    with pytest.raises(ModelMismatchError, match="another backbone"):
        coseg("--images", mixed, "--concepts", other, "--out", tmp_path / "o3")


def test_k_too_large_is_a_data_error(toy, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    Image.open(sorted((toy / "images" / "set00").iterdir())[0]).save(one / "a.png")
    with pytest.raises(DataError, match="larger than the data allows") as e:
        coseg("--images", one, "--k", "500", "--image-size", "64", "--out", tmp_path / "o")
    assert "\n" not in str(e.value)


def test_empty_folder_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as ex:
        main_wrapper(lambda _: TOOL.main(["--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "no images" in err[0]
    with pytest.raises(DataError, match="no such folder"):
        TOOL.main(["--images", str(tmp_path / "missing")])


@pytest.mark.slow
def test_the_script_runs_on_its_own(tmp_path):
    """What only a subprocess shows: the file runs as a script (imports, exit code, one line)."""
    (tmp_path / "empty").mkdir()
    p = run_tool("coseg", "--images", tmp_path / "empty", "--out", tmp_path / "o")
    assert_one_line_error(p, "no images")


@pytest.mark.slow
def test_a_one_image_set_warns_in_one_line(toy, tmp_path):
    """Before issue 27 a single image was co-segmented with no word that its 'object' means little."""
    src = sorted((toy / "images" / "set00").iterdir())
    for n, name in ((1, "one"), (2, "two")):
        d = tmp_path / name
        d.mkdir()
        for p in src[:n]:
            Image.open(p).save(d / p.name)
        proc = run_tool("coseg", "--images", d, "--k", "2", "--image-size", "64", "--no-write", "--quiet")
        assert proc.returncode == 0, proc.stderr
        warned = [ln for ln in proc.stderr.splitlines() if "holds 1 image" in ln]
        assert warned == ([f"note: set '{name}' holds 1 image: co-segmentation finds what several images share, "
                           "so its object mask is only the strongest region of that image; add images of the same "
                           "object (or project on learned concepts with --concepts)"] if n == 1 else [])
