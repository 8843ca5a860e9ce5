"""sn.datasets.image_to_mnist: a picture of a digit made a 28x28 image the way
MNIST's were (grey, light ink on black, cropped to the ink, fit into 20x20
keeping the aspect ratio, centred by centre of mass), from arrays and files."""
import numpy as np
import pytest

import scratchnet as sn

to_mnist = sn.datasets.image_to_mnist


def centre_of_mass(image):
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    total = image.sum()
    return image.sum(axis=1) @ rows / total, image.sum(axis=0) @ cols / total


def ink_box(image, level=0.0):
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def correlation(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


@pytest.fixture(scope="module")
def digits(mnist):
    """Ten test-set digits, (10, 28, 28) in [0, 1], and their labels."""
    (_, _), (Xt, yt) = mnist
    return Xt[:10].reshape(10, 28, 28), yt[:10]


def enlarge(image, factor):
    """image (h, w) in [0, 1] made factor times larger by linear interpolation."""
    h, w = image.shape
    rows = np.clip((np.arange(h * factor) + 0.5) / factor - 0.5, 0, h - 1)
    cols = np.clip((np.arange(w * factor) + 0.5) / factor - 0.5, 0, w - 1)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = image[r0][:, c0] * (1 - fc) + image[r0][:, c1] * fc
    bottom = image[r1][:, c0] * (1 - fc) + image[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def test_an_mnist_digit_comes_back_as_it_was(digits):
    """MNIST's own images are already prepared: converting one changes little."""
    images, _ = digits
    for image in images:
        out = to_mnist(image)
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() == pytest.approx(1.0)
        assert correlation(out, image) > 0.8  # a pixel's shift from rounding at most
    assert np.mean([correlation(to_mnist(image), image) for image in images]) > 0.95


def test_a_larger_picture_is_brought_down_to_the_digit(digits):
    images, _ = digits
    for image in images:
        big = enlarge(image, 3)  # 84x84
        assert big.shape == (84, 84)
        assert correlation(to_mnist(big), image) > 0.85
        assert correlation(to_mnist((big * 255).round().astype(np.uint8)), image) > 0.85


def test_dark_ink_on_light_paper_is_inverted(digits):
    """MNIST's ink is light on black: black on white must come out the same."""
    images, _ = digits
    for image in images:
        big = enlarge(image, 3)
        light = to_mnist(1.0 - big)
        np.testing.assert_allclose(light, to_mnist(big), atol=1e-5)
        assert light[0].max() == 0 and light[:, 0].max() == 0  # a black background


def test_the_digit_is_cropped_wherever_it_stands(digits):
    images, _ = digits
    for k, image in enumerate(images):
        canvas = np.zeros((120, 200))
        top, left = 7 * k, 150 - 13 * k  # all over the canvas
        canvas[top:top + 28, left:left + 28] = image
        np.testing.assert_allclose(to_mnist(canvas), to_mnist(image), atol=1e-5)


def test_fit_into_20x20_keeping_the_aspect_ratio():
    """A bar 4 times as tall as it is wide becomes 20 x 5; a wide one 5 x 20."""
    tall = np.zeros((100, 60))
    tall[10:90, 20:40] = 1.0
    assert ink_box(to_mnist(tall)) == (20, 5)
    assert ink_box(to_mnist(tall.T)) == (5, 20)
    small = np.zeros((30, 30))  # smaller than 20 pixels: enlarged to 20
    small[5:15, 10:15] = 1.0
    assert ink_box(to_mnist(small)) == (20, 10)


def test_centred_by_centre_of_mass_not_by_the_box():
    """An L: its box's centre and its centre of mass differ; the centre of
    mass goes to pixel (14, 14), as in MNIST."""
    shape = np.zeros((60, 60))
    shape[5:55, 5:15] = 1.0   # the upright
    shape[45:55, 5:45] = 1.0  # the foot
    out = to_mnist(shape)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    box_centre = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2)
    assert abs(box_centre[0] - cy) > 1 and abs(box_centre[1] - cx) > 1


def test_mnist_digits_keep_their_centre(digits):
    images, _ = digits
    for image in images:
        cy, cx = centre_of_mass(to_mnist(enlarge(image, 3)))
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_colour_and_transparency(digits):
    image = enlarge(digits[0][0], 2)
    grey = to_mnist(image)
    # dark blue ink on cream paper, as 0..255 RGB
    paper, ink = np.array([250, 240, 210]), np.array([20, 30, 120])
    rgb = (paper + (ink - paper) * image[:, :, None]).round().astype(np.uint8)
    assert correlation(to_mnist(rgb), grey) > 0.98
    # black ink on a transparent background: transparent is white paper
    rgba = np.zeros(image.shape + (4,))
    rgba[:, :, 3] = image
    assert correlation(to_mnist(rgba), grey) > 0.98


def test_a_blank_picture_is_refused():
    for blank in (np.zeros((30, 30)), np.full((30, 30), 255, np.uint8)):
        with pytest.raises(ValueError, match="no ink"):
            to_mnist(blank)
    with pytest.raises(ValueError, match="2-D picture"):
        to_mnist(np.zeros((2, 3, 5, 5)))


def test_files_png_and_jpeg(tmp_path, digits):
    Image = pytest.importorskip("PIL.Image")
    image = enlarge(digits[0][0], 3)
    pixels = (255 * (1 - image)).round().astype(np.uint8)  # black on white
    expected = to_mnist(pixels)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(to_mnist(tmp_path / "grey.png"), expected)
    colour = np.stack([pixels, pixels, np.full_like(pixels, 255)], axis=2)  # blue on white
    Image.fromarray(colour).save(tmp_path / "colour.jpg", quality=90)
    assert correlation(to_mnist(str(tmp_path / "colour.jpg")), expected) > 0.97
    rgba = np.zeros(pixels.shape + (4,), np.uint8)
    rgba[:, :, 3] = 255 - pixels  # black ink, transparent elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    assert correlation(to_mnist(tmp_path / "transparent.png"), expected) > 0.99


def test_a_fashion_mnist_image_comes_back_as_it_was(fashion_mnist):
    """image_to_fashion_mnist: the dataset's own images are (nearly all) left
    as they are, and a larger picture on white paper is brought back to one
    like them. The digit recipe (20 pixels, centre of mass) made clothes
    unrecognisable: a model right on 86% of them was right on 40% (found by a
    reviewer predicting Fashion-MNIST pictures from the command line)."""
    (_, _), (Xt, _) = fashion_mnist
    images = Xt[:300].reshape(300, 28, 28)
    same = [np.array_equal(sn.datasets.image_to_fashion_mnist(np.round(255 * im).astype(np.uint8)),
                           im) for im in images]
    assert np.mean(same) > 0.95
    for image in images[:20]:
        paper = np.kron(1.0 - image, np.ones((4, 4)))  # 112 x 112, dark on white
        back = sn.datasets.image_to_fashion_mnist(paper)
        assert back.shape == (28, 28) and back.dtype == np.float32
        # blurred by the area-weighted shrinking, in place; the digit recipe's 0.3-0.6
        assert correlation(back, image) > 0.7
        assert correlation(back, image) > correlation(sn.datasets.image_to_mnist(paper), image)
    with pytest.raises(ValueError, match="image_to_fashion_mnist: no ink found"):
        sn.datasets.image_to_fashion_mnist(np.ones((30, 30)))
