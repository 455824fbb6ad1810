"""cosegment.metrics: Jaccard, precision, box IoU, CorLoc and part mIoU against hand-computed masks,
boxes and label maps."""
import numpy as np
import pytest

from cosegment.masks import mask_box
from cosegment.metrics import box_iou, corloc, jaccard, part_miou, precision, score_set
from retrieval.core.errors import DataError


def _mask(shape, *rects):
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def test_jaccard_and_precision_hand_computed():
    gt = _mask((4, 5), (0, 2, 0, 2))       # 4 pixels
    pred = _mask((4, 5), (1, 3, 1, 3))     # 4 pixels, overlap 1 pixel
    assert jaccard(pred, gt) == pytest.approx(1 / 7)
    # wrong pixels: 3 (pred only) + 3 (gt only) = 6 of 20
    assert precision(pred, gt) == pytest.approx(14 / 20)
    z = np.zeros((4, 5), bool)
    assert jaccard(z, z) == 1.0 and jaccard(pred, z) == 0.0
    with pytest.raises(DataError, match="sizes differ"):
        jaccard(pred, np.zeros((3, 5)))


def test_boxes_and_corloc_hand_computed():
    m = _mask((10, 10), (2, 5, 3, 7), (8, 9, 8, 9))
    assert mask_box(m) == (3, 2, 9, 9)
    assert mask_box(m, largest_component=True) == (3, 2, 7, 5)
    assert mask_box(np.zeros((3, 3))) is None
    # [0,4)x[0,4) vs [2,6)x[0,4): inter 2*4 = 8, union 16 + 16 - 8 = 24
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 4, 4), None) == 0.0
    preds = [(0, 0, 4, 4), (0, 0, 4, 4), (10, 10, 12, 12), None]
    gts = [(0, 0, 4, 5),                    # IoU 16/20 = 0.8 ≥ 0.5: hit
           (2, 0, 6, 4),                    # 1/3: miss
           [(0, 0, 1, 1), (10, 10, 12, 13)],  # second box IoU 4/6: hit
           None]                            # no object, no box: hit
    assert corloc(preds, gts) == pytest.approx(3 / 4)


def test_score_set_means():
    gt = [_mask((4, 4), (0, 2, 0, 2)), _mask((4, 4), (0, 4, 0, 4))]
    pred = [_mask((4, 4), (0, 2, 0, 2)), _mask((4, 4), (0, 2, 0, 4))]
    s = score_set(pred, gt)
    assert s.jaccard == pytest.approx((1 + 0.5) / 2)
    assert s.precision == pytest.approx((1 + 0.5) / 2)
    assert s.corloc == pytest.approx(1.0)  # second: box IoU 8/16 = 0.5 counts
    assert s.n == 2 and s.per_image == pytest.approx([1.0, 0.5])


def test_part_miou_hungarian_hand_computed():
    # one 2×4 image: parts 1 (left half) and 2 (right half); factors permuted and imperfect
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    pred = np.array([[2, 2, 1, 1], [2, 3, 1, 0]])
    # part 1 vs factor 2: inter 3, union 4 + 3 - 3 = 4 → 0.75; part 2 vs factor 1: inter 3, union 4 + 3 - 3 → 0.75
    s = part_miou([pred], [gt])
    assert s.match == {1: 2, 2: 1}
    assert s.ious[1] == pytest.approx(0.75) and s.ious[2] == pytest.approx(0.75)
    assert s.miou == pytest.approx(0.75)
    assert s.iou.shape == (2, 3)
    # pooled over two images; a third true part that no factor matches scores 0
    gt2 = np.array([[3, 3, 0, 0], [0, 0, 0, 0]])
    pred2 = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    s2 = part_miou([pred, pred2], [gt, gt2])
    assert s2.match[3] is None and s2.ious[3] == 0.0
    assert s2.miou == pytest.approx((0.75 + 0.75 + 0) / 3)
    with pytest.raises(DataError, match="labels above"):
        part_miou([pred], [gt], n_factors=2)


def test_part_miou_prefers_total_iou_over_greedy():
    # greedy would give factor 1 to part 1 (IoU 0.6) leaving part 2 with 0; Hungarian does better
    gt = np.array([[1, 1, 1, 2, 2]])
    pred = np.array([[1, 1, 2, 2, 2]])
    # part1-f1: 2/3; part1-f2: 1/5; part2-f2: 2/3; part2-f1: 0
    s = part_miou([pred], [gt])
    assert s.match == {1: 1, 2: 2} and s.miou == pytest.approx(2 / 3)
