"""Training: the converter (`vc train`), adaptation to new speakers (`vc adapt`) and the vocoder
(`vc train-vocoder`), each a step function run by the one loop of `vc.training.loop`.

Inference (`vc.api` and the flat modules beside it) never imports this package, so that converting needs neither
the training code nor its extras (TensorBoard)."""
