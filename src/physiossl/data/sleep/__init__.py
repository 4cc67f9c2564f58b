"""Sleep sound: the store format ``physiossl.sleep/1`` of log-mel epochs (:mod:`.store`), the features
(:mod:`.features`), sleep stages and their coarser views (:mod:`.stages`), the sequence loaders (:mod:`.loading`),
the synthetic nights of the demo (:mod:`.synth`) and the dataset sources (:mod:`.sources`)."""
