# SMCA-DETR, single-scale: the SMCA quickstart model (ResNet-18 C4, stride 16).
_base_ = '../smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py'
