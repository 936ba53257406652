"""The audio modality: log-mel features and the WaveGrad vocoder backbone."""
