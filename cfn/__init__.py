"""CloudFormation for streamfold: the storage stack, the Chalice compute extras, packaging.

``python -m cfn.generate`` writes the committed templates (``cfn/storage.json``,
``cfn/compute-extras.json``) and the Chalice IAM policies (``.chalice/policy-<stage>.json``)
from the table specs in :mod:`chalicelib.tables` and ``.chalice/config.json``;
``python -m cfn.package OUT_DIR`` builds the deployable compute stack.
"""
