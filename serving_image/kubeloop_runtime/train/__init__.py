"""The training runtime behind ``kubeloop-train``.

Layers, each importable and testable on its own:

* ``spec``      text -> ``api.TrainingJobSpec`` (manifest or bare spec, YAML or JSON)
* ``data``      dataset sources -> DataFrame + fingerprint; column validation
* ``pipeline``  spec -> unfitted scikit-learn Pipeline (allowlisted estimators only)
* ``evaluate``  metrics, cross-validation, quality gate, ``evaluate_on``
* ``onnx_export`` optional ONNX graph, kept only when verified
* ``result``    the TrainingResult document and the bounded termination message
* ``runner``    orchestration: one run, files written, result returned
* ``cli``       argument parsing, logging, exit codes

This package imports nothing heavy itself, so ``kubeloop-train`` reports a bad spec before
scikit-learn loads. ``evaluate.evaluate_on(model, frame, spec)`` scores any fitted model on a
frame such as ``holdout.csv`` (the closed loop's champion/challenger comparison).
"""
