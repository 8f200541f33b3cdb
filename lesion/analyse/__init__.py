"""Research instruments: where a model fails (layer 5b: above infer / explain and train, below serving and cli).

Every instrument takes predictions from any member — a shipped checkpoint, an imported one, or a predictions
file (:class:`lesion.infer.predictions.PredictionsMember`) — as plain arrays, so the maths is testable on
generated data whose answers are planted:

* :mod:`~lesion.analyse.slices`: per-group AUC with bootstrap CI, sensitivity / specificity at the operating
  point, calibration error; worst-group gap with its CI; a slice finder with Benjamini–Hochberg correction;
* :mod:`~lesion.analyse.image_features`: image-derived columns to slice by, named as estimates and heuristics
  (skin tone from the individual typology angle, brightness, dark corners, hair, ink and ruler marks);
* :mod:`~lesion.analyse.label_issues`: confident-learning ranking of likely label errors (cleanlab), perceptual-hash
  near duplicates (imagehash) and lesions split across training and held-out images;
* :mod:`~lesion.analyse.diff`: two members on the same images: paired ΔAUC (bootstrap CI, DeLong), McNemar;
* :mod:`~lesion.analyse.shortcuts`: CAM mass outside the lesion / lung fields against correctness;
* :mod:`~lesion.analyse.embedding`: penultimate features -> UMAP map (cached by content and checkpoint);
* :mod:`~lesion.analyse.stats`: DeLong's test, paired bootstrap, McNemar, expected calibration error;
* :mod:`~lesion.analyse.cli`: ``lesion analyse slices | label-issues | diff | shortcuts``.
"""
