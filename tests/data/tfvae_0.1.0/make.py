"""The fixtures of tests/test_upgrade.py: a tiny model of each family 0.1.0 could
build, saved by the 0.1.0 code before the one-core change (commit e1c49b7^), and its
encoder's and decoder's outputs on fixed inputs (NAME.keras, NAME.npz):

    git archive e1c49b7^ | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/tfvae_0.1.0/make.py tests/data/tfvae_0.1.0
"""
import sys

import keras
import numpy as np

import tfvae

out = sys.argv[1]
x = (np.random.default_rng(0).random((5, 8, 8, 1)) > 0.5).astype("float32")
z = np.random.default_rng(1).normal(size=(5, 2)).astype("float32")
keras.utils.set_random_seed(0)
families = {
    "mlp": lambda: tfvae.VAE(encoder=tfvae.MLPEncoder(2, hidden_units=(8,)),
                             decoder=tfvae.MLPDecoder((8, 8, 1), hidden_units=(8,))),
    "conv_vamp": lambda: tfvae.VAE(
        encoder=tfvae.ConvEncoder(2, filters=(4,), hidden_units=(8,)),
        decoder=tfvae.ConvDecoder((8, 8, 1), filters=(4,), hidden_units=(8,),
                                  likelihood="gaussian"),
        prior=tfvae.VampPrior((8, 8, 1), num_pseudo_inputs=3)),
    "mixture": lambda: tfvae.VAE(
        encoder=tfvae.MLPEncoder(2, hidden_units=(8,)),
        decoder=tfvae.MLPDecoder((8, 8, 1), hidden_units=(8,)),
        prior=tfvae.MixturePrior(2, num_components=3)),
}
for name, make in families.items():
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=2, verbose=0)
    model.save(f"{out}/{name}.keras")
    q, p = model.encoder(x), model.decoder(z)
    np.savez(f"{out}/{name}.npz", x=x, z=z, loc=q.mean().numpy(),
             scale=q.stddev().numpy(), mean=p.mean().numpy())
    print(name, "ok")
