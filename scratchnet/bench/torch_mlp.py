"""The MLP table's PyTorch competitor: the idiomatic training loop (zero_grad,
loss, backward, step) over an nn.Sequential, from the shared initial weights.
torch is optional: it is imported only when a network is built."""
from .workload import OPTIMIZER_ARGS, epoch_order


class TorchMLP:
    """The idiomatic PyTorch loop."""

    def __init__(self, weights, optimizer, batch_size):
        import torch
        layers = []
        for w, b in weights:
            linear = torch.nn.Linear(*w.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w.T))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.setup(torch, torch.nn.Sequential(*layers[:-1]), optimizer, batch_size)

    def setup(self, torch, model, optimizer, batch_size):
        self.torch = torch
        self.model = model.eval()  # epoch() and step() switch to train()
        self.loss_fn = torch.nn.CrossEntropyLoss()
        if optimizer:
            self.optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](
                self.model.parameters(), **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def epoch(self, X, y):
        X, y = self.torch.from_numpy(X), self.torch.from_numpy(y)
        order = self.torch.from_numpy(epoch_order(len(X)))
        self.model.train()
        for start in range(0, len(X), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(X[idx]), y[idx])
            loss.backward()
            self.optimizer.step()

    def predict_proba(self, x):
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self.torch.from_numpy(x)), dim=1).numpy()

    def accuracy(self, X, y):
        self.model.eval()
        return float((self.predict_proba(X).argmax(axis=1) == y).mean())
