"""model-index.yml and the configs' metafile.yml, in mmdet's schema: `mim search mmdet_ddetr`
lists every config with its metadata, and what each entry says matches its config.

These read this checkout's files with model-index's own loader and mim's own parser (the
installed `mmdet_ddetr` may be another checkout); tests/test_mim_search.py runs `mim` itself.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from mim.commands.search import convert2df
from mmengine.config import Config
from modelindex.load_model_index import load

from tests.conftest import REPO

FAMILIES = ('deformable_detr', 'smca_detr')
CONFIGS = sorted(p.relative_to(REPO).as_posix()
                 for family in FAMILIES for p in (REPO / 'configs' / family).glob('*.py'))
INDEX = load(str(REPO / 'model-index.yml'))
MODELS = {model.name: model for model in INDEX.models}


def test_every_config_has_exactly_one_entry():
    listed = [model.config for model in INDEX.models]
    assert len(CONFIGS) >= 16
    duplicates = sorted({c for c in listed if listed.count(c) > 1})
    assert not duplicates, f'configs listed twice in a metafile: {duplicates}'
    assert sorted(listed) == CONFIGS, (
        f'configs without a metafile entry: {sorted(set(CONFIGS) - set(listed))}; '
        f'entries without a config: {sorted(set(listed) - set(CONFIGS))}')


def test_entries_are_named_by_config_and_their_paths_exist():
    assert len(MODELS) == len(INDEX.models), 'two entries share a name'
    for name, model in MODELS.items():
        assert (REPO / model.config).is_file(), f'{name}: no file {model.config}'
        assert name == Path(model.config).stem, f'{name}: not the config name {model.config}'
    collections = {c.name: c for c in INDEX.collections}
    assert set(collections) == {'Deformable DETR', 'SMCA-DETR'}
    for collection in collections.values():
        assert (REPO / collection.readme).is_file()
        assert collection.paper.startswith('https://arxiv.org/abs/')
        assert collection.metadata.data['Architecture']
    assert {model.in_collection for model in INDEX.models} == set(collections)


def test_model_index_has_no_schema_errors():
    # model-index resolves README paths from the metafile's folder; mmdet's (and mim's)
    # convention is the repository root, checked above, so those reports are expected.
    errors = [e for e in INDEX.check(silent=True) if 'Path to README file' not in e]
    assert not errors, errors


@pytest.mark.parametrize('name', sorted(MODELS))
def test_metadata_matches_the_config(name):
    model = MODELS[name]
    cfg = Config.fromfile(str(REPO / model.config), import_custom_modules=False)
    meta = model.metadata.data
    assert meta['Epochs'] == cfg.train_cfg.max_epochs
    # mmdet's naming: <gpus>xb<images per gpu>; Batch Size is the total.
    gpus, per_gpu = map(int, re.search(r'_(\d+)xb(\d+)', name).groups())
    assert cfg.train_dataloader.batch_size == per_gpu
    assert meta['Batch Size'] == gpus * per_gpu
    synthetic = name.endswith('_synthetic')
    assert cfg.train_dataloader.dataset.data_root.startswith(
        'data/synthetic' if synthetic else 'data/coco')
    assert meta.get('Training Data', 'COCO') == ('Synthetic Shapes' if synthetic else 'COCO')


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_result_says_where_it_comes_from(name):
    model = MODELS[name]
    # No checkpoint is hosted: a `Weights` URL would make mmengine's inferencers download
    # something that is not there. Official checkpoints are converted by the user.
    assert model.weights is None
    results = list(model.results)
    if not results:
        assert 'Results Source' not in model.metadata.data
        return
    source = model.metadata.data['Results Source']
    dataset = 'Synthetic Shapes' if name.endswith('_synthetic') else 'COCO'
    assert source.startswith('measured' if dataset != 'COCO' else 'paper'), source
    for result in results:
        assert result.task == 'Object Detection' and result.dataset == dataset
        assert 0 < result.metrics['box AP'] < 100  # percent, as mmdet's metafiles


def test_paper_numbers():
    """The papers' Table 1 / the official SMCA README (see the metafiles' header)."""
    box_ap = {name: model.results.data[0].metrics['box AP']
              for name, model in MODELS.items() if name.endswith('_coco') and model.results}
    assert box_ap == {
        'deformable-detr-single-scale_r50_16xb2-50e_coco': 39.4,
        'deformable-detr_r50_16xb2-50e_coco': 43.8,
        'deformable-detr-refine_r50_16xb2-50e_coco': 45.4,
        'deformable-detr-refine-twostage_r50_16xb2-50e_coco': 46.2,
        'smca-detr_r50_8xb2-50e_coco': 41.0,
        'smca-detr_r50_8xb2-108e_coco': 42.7,
        'smca-detr_r101_8xb2-50e_coco': 42.0,
        'smca-detr-ms_r50_8xb2-50e_coco': 43.7,
    }


def test_mim_search_parses_every_entry():
    """What `mim search mmdet_ddetr` prints is this table (mim's own parser)."""
    table = convert2df(INDEX)
    assert sorted(table.index) == sorted(MODELS)
    demo = table.loc['deformable-detr-refine-twostage_r18_1xb4-4e_synthetic']
    assert demo['synthetic shapes/box_ap'] == 20.9
    assert demo['model'] == 'deformable detr'
    assert demo['training_data'] == 'synthetic shapes'  # mim lowercases
    assert demo['epochs'] == 4 and demo['batch_size'] == 4
    assert demo['config'] == ('configs/deformable_detr/'
                              'deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py')
    assert table.loc['smca-detr_r50_8xb2-50e_coco', 'coco/box_ap'] == 41.0
    assert table.loc['smca-detr_r50_8xb2-50e_coco', 'paper'] == 'https://arxiv.org/abs/2101.07448'
    assert table.loc['smca-detr_r50_8xb2-50e_coco', 'results_source'].startswith('paper')


# Our names that are also mmdet's (mmdet ships DeformableDETR configs of the same names):
# DetInferencer('<one of these>') builds mmdet's model and downloads mmdet's weights.
SAME_NAME_IN_MMDET = {'deformable-detr_r50_16xb2-50e_coco',
                      'deformable-detr-refine_r50_16xb2-50e_coco',
                      'deformable-detr-refine-twostage_r50_16xb2-50e_coco'}


def test_names_shared_with_mmdet_are_documented():
    import mmdet
    from mmengine.infer import BaseInferencer
    mmdet_names = {model['Name'] for model in BaseInferencer._get_models_from_metafile(
        str(Path(mmdet.__file__).parent / '.mim'))}
    assert set(MODELS) & mmdet_names == SAME_NAME_IN_MMDET
    doc = (REPO / 'docs' / 'model_index.md').read_text()
    assert all(f'`{name}`' in doc for name in SAME_NAME_IN_MMDET)


def test_docs_table_lists_every_model():
    rows = {line.split('|')[1].strip(): line.split('|')[3].strip()
            for line in (REPO / 'docs' / 'model_index.md').read_text().splitlines()
            if line.startswith('| ') and '_' in line.split('|')[1]}
    expected = {name: (f"{model.results.data[0].metrics['box AP']:.1f}" if model.results
                       else '-') for name, model in MODELS.items()}
    assert rows == expected


def test_det_inferencer_by_name_does_not_see_our_models():
    """mmengine looks names up in mmdet's model-index only (docs/model_index.md)."""
    from mmdet.apis import DetInferencer
    with pytest.raises(ValueError, match='Cannot find model: smca-detr_r50_8xb2-50e_coco'):
        DetInferencer('smca-detr_r50_8xb2-50e_coco', device='cpu')


def test_det_inferencer_takes_the_metafile_config_path():
    """The documented alternative: the entry's Config path (random weights here)."""
    from mmdet.apis import DetInferencer
    model = MODELS['deformable-detr-refine-twostage_r18_1xb4-4e_synthetic']
    inferencer = DetInferencer(str(REPO / model.config), weights=None, device='cpu',
                               show_progress=False)
    assert type(inferencer.model).__name__ == 'DDETR'
    image = np.random.RandomState(0).randint(0, 256, (128, 128, 3), np.uint8)
    prediction = inferencer(image)['predictions'][0]
    assert len(prediction['bboxes']) == len(prediction['scores']) == 50  # max_per_img
    assert all(0 <= label < 5 for label in prediction['labels'])  # the 5 synthetic classes
