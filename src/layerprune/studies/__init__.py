"""Paper studies built on the library (issue #14's cross-family report, the calibration-size
study): they load models, name methods and check the papers' claims. The core never imports
this package (a test checks it); run them with ``python -m layerprune.studies.<name>``."""
