"""`faast train KERNEL`: quantization-aware training of a kernel folder's QKeras model on its own
data generator; writes the weights file named in kernel.toml back into the folder."""

import numpy as np
from tqdm import tqdm

from .spec import KernelSpec
from .toolchain import tf_keras


class _ProgressBar(tf_keras.callbacks.Callback):
    """One tqdm bar over all training steps, showing the latest training and validation loss."""

    def __init__(self, epochs, steps_per_epoch):
        super().__init__()
        self.bar = tqdm(total=epochs * steps_per_epoch, unit="step", desc="training")
        self.postfix = {}

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        self.postfix["loss"] = f"{logs['loss']:.4g}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.postfix.update(epoch=epoch + 1, val_loss=f"{logs['val_loss']:.4g}")
        self.bar.set_postfix(self.postfix)

    def on_train_end(self, logs=None):
        self.bar.close()


def train(kernel_dir, epochs=None, samples=None):
    spec = KernelSpec.read(kernel_dir)
    settings = dict(spec.training)
    epochs = epochs or settings["epochs"]
    samples = samples or settings["samples"]
    tf_keras.utils.set_random_seed(settings["seed"])

    x, y = spec.load_entry("data")(samples, seed=settings["seed"])
    n_val = int(samples * settings["validation_fraction"])
    model = spec.model(trained=False)
    loss = settings.get("loss", "mse")
    model.compile(optimizer=tf_keras.optimizers.Adam(settings["learning_rate"]), loss=loss)
    steps = int(np.ceil((samples - n_val) / settings["batch_size"]))
    model.fit(
        x[n_val:],
        y[n_val:],
        validation_data=(x[:n_val], y[:n_val]),
        epochs=epochs,
        batch_size=settings["batch_size"],
        verbose=0,
        callbacks=[
            _ProgressBar(epochs, steps),
            tf_keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3, verbose=0),
            # keep the epoch with the best validation loss: short QAT runs can jump late
            tf_keras.callbacks.EarlyStopping(patience=epochs, restore_best_weights=True),
        ],
    )
    model.save_weights(spec.weights_path)

    if loss != "mse":
        scores = model.predict(x[:n_val], batch_size=256, verbose=0)
        accuracy = np.mean(np.argmax(scores, axis=1) == y[:n_val])
        print(f"wrote {spec.weights_path}: validation accuracy {accuracy:.3f}")
        return
    predicted = model.predict(x[:n_val], batch_size=8192, verbose=0).ravel()
    truth = y[:n_val]
    signal = truth > 5.0
    response = predicted[signal] / truth[signal]
    print(
        f"wrote {spec.weights_path}: validation rms error {np.sqrt(np.mean((predicted - truth) ** 2)):.3f} GeV,"
        f" response above 5 GeV {np.mean(response):.3f} +- {np.std(response):.3f}"
    )
