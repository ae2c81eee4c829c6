"""annotation_audit: the reason mmdet drops a box, and the counts reported at build."""
import pytest

from mmdet_ddetr.datasets.annotation_audit import (NAN_BOX, OUTSIDE, TOO_SMALL,
                                                   UNKNOWN_CATEGORY, AnnotationAudit,
                                                   check_class_names, drop_reason)


def _ann(bbox, category_id=1, area=100.0, **extra):
    return dict(bbox=bbox, category_id=category_id, area=area, **extra)


@pytest.mark.parametrize('ann, reason', [
    (_ann([10, 10, 20, 20]), None),
    (_ann([10, 10, 20, 20], category_id=99), UNKNOWN_CATEGORY),
    (_ann([10, 10, 0, 20]), TOO_SMALL),
    (_ann([10, 10, -5, 20]), TOO_SMALL),
    (_ann([10, 10, 20, 20], area=0), TOO_SMALL),
    (_ann([float('nan'), 10, 20, 20]), NAN_BOX),
    (_ann([10, 10, 20, float('nan')]), NAN_BOX),
    (_ann([200, 10, 20, 20]), OUTSIDE),
    (_ann([-30, 10, 20, 20]), OUTSIDE),
])
def test_drop_reason_names_the_rule(ann, reason):
    assert drop_reason(ann, width=100, height=80, cat_ids={1, 2}) == reason


def test_audit_counts_by_reason_and_ignores_ignored():
    audit = AnnotationAudit()
    audit.add([_ann([10, 10, 20, 20]), _ann([10, 10, 20, 20], category_id=12),
               _ann([10, 10, 20, 20], category_id=99), _ann([1, 1, 0, 5]),
               _ann([0, 0, 5, 5], category_id=12, ignore=True)], 100, 80, [1])
    assert (audit.total, audit.kept) == (4, 1)
    assert audit.summary() == ('dropped 3 of 4 boxes: 2 unknown category id (ids 12, 99), '
                               f'1 {TOO_SMALL}')


def test_class_names_missing_from_the_annotations_list_both_sets():
    with pytest.raises(ValueError) as info:
        check_class_names(('cat', 'dog'), {1: 'Cat', 2: 'dog'}, 'ann.json')
    message = str(info.value)
    assert "['cat']" in message and "['Cat', 'dog']" in message and 'ann.json' in message
    check_class_names(('dog', ), {1: 'Cat', 2: 'dog'}, 'ann.json')  # a subset is allowed
