"""12-lead ECG: the store format ``physiossl.ecg/1`` (:mod:`.store`), its loaders (:mod:`.loading`), the derived
heart rate (:mod:`.targets`), the synthetic demo signals (:mod:`.synth`) and the dataset sources (:mod:`.sources`)."""

#: the canonical lead order of every ECG store
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
