"""The notebook cell from issue 2, verbatim, and what a user expects from its results."""

import numpy as np
import tensorflow_probability as tfp

tfd = tfp.distributions

# Verbatim from issue 2 ("This must work verbatim in a notebook"); do not edit.
SNIPPET = '''
import numpy as np, keras, tfvae
x = (np.random.rand(512, 28, 28, 1) > 0.5).astype("float32")
model = tfvae.VAE(
    encoder=tfvae.MLPEncoder(latent_dim=16, hidden_units=(256, 256)),
    decoder=tfvae.MLPDecoder(output_shape=(28, 28, 1), hidden_units=(256, 256), likelihood="bernoulli"),
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(x, epochs=2, batch_size=64)
q = model.encoder(x[:4])          # a tfp Distribution, batch_shape [4]
p = model.decoder(q.sample())     # a tfp Distribution over images
terms = model.elbo(x[:4])         # dict with per-example 'elbo', 'rate', 'distortion'
model.save("/tmp/vae.keras"); again = keras.models.load_model("/tmp/vae.keras")
'''


def test_notebook_snippet():
    cell = {}
    exec(compile(SNIPPET, "<notebook cell>", "exec"), cell)  # noqa: S102 - the user's cell
    history, q, p, terms, again, x = (cell[name] for name in
                                      ("history", "q", "p", "terms", "again", "x"))

    # fit showed real epoch means, not the 0.0 of an untracked "loss" key.
    logs = history.history
    assert set(logs) == {"loss", "elbo", "rate", "distortion"}
    for name, values in logs.items():
        assert len(values) == 2 and np.all(np.isfinite(values)), name
    assert logs["loss"][0] > 100  # random 28x28 binary images cost ~543 nats
    np.testing.assert_allclose(logs["loss"], -np.array(logs["elbo"]), rtol=1e-5)
    np.testing.assert_allclose(logs["elbo"], -(np.array(logs["rate"])
                                               + np.array(logs["distortion"])), rtol=1e-5)

    assert isinstance(q, tfd.Distribution)
    assert q.batch_shape == [4] and q.event_shape == [16]
    assert isinstance(p, tfd.Distribution)
    assert p.batch_shape == [4] and p.event_shape == [28, 28, 1]
    assert p.mean().shape == (4, 28, 28, 1)

    assert set(terms) == {"elbo", "rate", "distortion"}
    for name, value in terms.items():
        assert value.shape == (4,), name
    np.testing.assert_allclose(terms["elbo"], -(terms["rate"] + terms["distortion"]),
                               rtol=1e-6)
    assert np.all(terms["rate"].numpy() > 0)

    q_again = again.encoder(x[:4])
    np.testing.assert_array_equal(q_again.mean(), q.mean())
    np.testing.assert_array_equal(q_again.stddev(), q.stddev())
    assert type(again) is type(cell["model"])
