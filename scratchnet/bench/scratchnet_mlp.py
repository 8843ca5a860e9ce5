"""The MLP table's scratchnet competitor: a Sequential trained by fit, as a
user would write it."""
from ..layers import Dense, ReLU
from ..model import Sequential
from ..optimizers import SGD, Adam
from .workload import OPTIMIZER_ARGS, SEED


class ScratchnetMLP:
    def __init__(self, weights, optimizer, batch_size):
        layers = []
        for w, b in weights:
            dense = Dense(*w.shape)
            dense.weight.data[...] = w
            dense.bias.data[...] = b
            layers += [dense, ReLU()]
        self.model = Sequential(*layers[:-1])
        if optimizer:
            self.optimizer = {"sgd": SGD, "adam": Adam}[optimizer](
                self.model.parameters(), **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def fit(self, X, y, epochs):
        """Train for `epochs` epochs; returns fit's history (its "time": seconds per epoch)."""
        return self.model.fit(X, y, optimizer=self.optimizer, epochs=epochs,
                              batch_size=self.batch_size, seed=SEED, verbose=0)

    def epoch(self, X, y):
        self.fit(X, y, epochs=1)

    def predict_proba(self, x):
        return self.model.predict_proba(x)

    def accuracy(self, X, y):
        return self.model.evaluate(X, y)["accuracy"]
