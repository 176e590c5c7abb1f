"""The tour's words, in English and in Korean (the lecture's language).

Figures keep English labels (matplotlib's default font has no Hangul); the claims, captions and
tables are translated. Numbers are filled in by the tour at run time.
"""

EN = {
    "report_title": "vaelab tour: the VAE lecture, computed",
    "subtitle": "Every figure and number below was computed by this run, on real MNIST digits.",
    "training": "training the tour's {model} ({latent}-D latent)...",
    "measuring": "measuring and drawing...",
    "intro_title": "How to read this report",
    "intro_text": (
        "The lecture goes: maximum likelihood vs maximum a posteriori, information and the KL "
        "divergence, the autoencoder vs the variational autoencoder, the evidence lower bound "
        "(ELBO), a close look at an MNIST VAE with a 2-D latent space, then the adversarial "
        "and conditional autoencoders.\n\nEach section states a claim, shows a figure and "
        "gives the number that checks it. The models were trained for this report on the 9,000 "
        "training digits shipped with vaelab and judged on the 1,000 test digits; their runs "
        "are in models/ beside this file."
    ),
    # MLE vs MAP
    "mle_title": "1. MLE vs MAP: least squares vs ridge",
    "mle_text": (
        "Claim: with Gaussian noise, maximizing the likelihood of a linear model is minimizing "
        "the squared error (the negative log-likelihood is the MSE up to constants). Adding a "
        "zero-mean Gaussian prior on the weights and maximizing the posterior (MAP) gives ridge "
        "regression with lambda = sigma^2 / tau^2; a flat prior (tau -> infinity) gives back "
        "the MLE. Check: the closed forms agree to float precision, and gradient descent on the "
        "negative log-posterior lands on the ridge solution."
    ),
    "fits_caption": "A degree-{degree} polynomial fitted to {n} noisy points: least squares "
    "(MLE) overfits, MAP (= ridge) is smoother.",
    "shrinkage_caption": "MAP weights as the prior narrows (tau falls): the prior shrinks them "
    "to 0; as tau grows they approach the least-squares weights.",
    "nll_vs_mse": "|NLL - (N/(2 sigma^2) MSE + N/2 log(2 pi sigma^2))|",
    "map_vs_ridge": "max |w_MAP - w_ridge| (lambda = sigma^2/tau^2)",
    "gradient_vs_ridge": "max |w_gradient - w_ridge|",
    "lambda": "lambda = sigma^2 / tau^2",
    "flat_prior": "max |w_MAP(tau = 1e6) - w_MLE|",
    # information
    "info_title": "2. Information, entropy, cross-entropy and KL",
    "info_text": (
        "Claim: an outcome of probability p carries -log2 p bits of information; the entropy "
        "H(P) is its average; the cross-entropy H(P, Q) is the average cost of coding P's "
        "outcomes with a code made for Q; and KL(P || Q) = H(P, Q) - H(P) >= 0, with "
        "KL(P || Q) != KL(Q || P) in general. The VAE's KL term is the closed form for two "
        "Gaussians, checked here against a Monte Carlo estimate."
    ),
    "kl_caption": "Two distributions P and Q and the KL divergence in both directions.",
    "gauss_kl_closed": "Gaussian KL, closed form (nats)",
    "gauss_kl_mc": "Gaussian KL, Monte Carlo (nats)",
    "gauss_kl_se": "its standard error",
    # paradox
    "paradox_title": "3. Why pixel MSE misjudges images",
    "paradox_text": (
        "Claim: pixel-wise squared error is a poor measure of likeness. A digit with a part "
        "erased can be 'closer' to the original than the same digit moved by one pixel, "
        "although the moved digit is obviously the same digit. This is why the VAE models "
        "p(x|z) through a likelihood of the whole image instead of being judged by MSE alone."
    ),
    "paradox_caption": "Original, shifted by one pixel, partly erased: pixel MSE in the titles.",
    "paradox_fraction": "test digits where the erased image has the lower MSE",
    "paradox_shift_mse": "mean MSE of the 1-pixel shift",
    "paradox_erase_mse": "mean MSE of the erased image",
    # AE vs VAE
    "ae_vae_title": "4. AE vs VAE on the same digits",
    "ae_vae_text": (
        "Claim: the autoencoder only compresses; nothing makes its codes fill a known "
        "distribution, so decoding z ~ N(0, I) gives shapes that are mostly not digits. The "
        "VAE fits q(z|x) towards the prior N(0, I), so its prior samples decode to digits and "
        "the path between two codes passes through digits. Both have a 20-D latent space here. "
        "Check: a CNN classifier trained on real digits judges the prior samples of both."
    ),
    "ae_vae_samples_title": "Prior samples z ~ N(0, I): AE (top row), VAE (bottom row)",
    "ae_vae_samples_caption": "16 decoded prior samples of each model: AE first, then VAE.",
    "interpolation_title": "From a 1 to a 7: AE (top), VAE (bottom)",
    "interpolation_caption": "Decoding the straight line between the codes of two test digits.",
    "ae_confidence": "classifier confidence on AE prior samples (mean top probability)",
    "vae_confidence": "classifier confidence on VAE prior samples",
    "ae_confident_share": "share of AE samples classified with confidence > 0.9",
    "vae_confident_share": "share of VAE samples classified with confidence > 0.9",
    # ELBO
    "elbo_title": "5. The ELBO",
    "elbo_text": (
        "Claim: log p(x) = ELBO + KL(q(z|x) || p(z|x)), so the ELBO = E_q[log p(x|z)] - "
        "KL(q(z|x) || p(z)) is a lower bound whose gap is how far the encoder is from the true "
        "posterior. Check: log p(x) is estimated per test image by importance sampling; the gap "
        "log p(x) - ELBO is positive for every image. Training lowers the reconstruction term "
        "while the KL term grows to pay for an informative code."
    ),
    "elbo_terms_title": "VAE training: reconstruction and KL terms (nats per image)",
    "elbo_terms_caption": "The two terms of the negative ELBO over training (train solid, test "
    "dashed).",
    "elbo_gap_title": "Per-image gap log p(x) - ELBO",
    "elbo_gap_xlabel": "nats",
    "elbo_gap_caption": "The gap KL(q(z|x) || p(z|x)) per test image, estimated.",
    "mean_elbo": "mean ELBO (nats per image)",
    "mean_log_px": "mean log p(x), importance sampled",
    "mean_gap": "mean gap = KL(q(z|x) || p(z|x))",
    "k_used": "importance samples per image",
    # review
    "review_title": "6. An MNIST VAE with a 2-D latent space",
    "review_text": (
        "Claim: with a 2-D latent the whole generative model can be seen at once: decoding a "
        "grid of Normal quantiles shows the digits morphing into each other. The decoded centre "
        "of the manifold (z = 0) resembles the mean of all training images, and the distance to "
        "that mean grows towards the edges of the grid, as the lecture found. The class-mean "
        "codes decode to sharp prototypes where the class-mean images are blurred."
    ),
    "vae_explorer_title": "Explore the 2-D VAE: drag on the plane to decode, draw a digit to "
    "encode it (the model runs in this page)",
    "aae_explorer_title": "Explore the AAE's latent space",
    "cvae_explorer_title": "Explore the CVAE: pick a label, move z to change the style",
    "manifold_title": "The 2-D latent manifold at Normal quantiles",
    "manifold_caption": "The decoder over a 20 x 20 grid of Normal quantiles (z1 right, z2 up).",
    "mean_vs_centre_title": "Mean training image (left), decoded z = 0 (right)",
    "mean_vs_centre_caption": "The average of the training digits and the decoded centre.",
    "distance_map_title": "L2 distance of each manifold cell to the mean image",
    "distance_label": "L2 distance",
    "distance_map_caption": "Each cell of the manifold above, coloured by its distance to the "
    "mean training image.",
    "class_means_title": "Class-mean images (top), decoded class-mean codes (bottom)",
    "class_means_caption": "Per digit: the mean of its test images, and the decoded mean of "
    "their codes.",
    "scatter_title": "VAE: test posterior means, coloured by digit",
    "scatter_caption": "Where the 1,000 test digits land in the 2-D latent space.",
    "recon_title": "Test digits (odd rows) and their VAE reconstructions (even rows)",
    "recon_caption": "Reconstructions: the decoder's mean at each test digit's posterior mean.",
    "centre_distance": "L2 distance of the decoded centre z = 0 to the mean image",
    "corner_distance": "mean L2 distance of the four corner cells to the mean image",
    "min_distance": "smallest distance over the grid",
    "min_cell": "where it is",
    # AAE and CVAE
    "aae_cvae_title": "7. Adversarial and conditional autoencoders",
    "aae_cvae_text": (
        "Claim: the AAE replaces the KL term with a discriminator on z, so any prior that can "
        "be sampled can be matched, here a mixture of 10 Gaussians on a circle; label-aware, as "
        "in Makhzani et al.'s Figure 4: the discriminator also sees the label, and the codes of "
        "digit c are matched to component c, so each digit takes its own component. How close "
        "the match is, is a number: the MMD between the codes and prior samples, beside the "
        "same statistic between two prior samples (a perfect match). The CVAE feeds "
        "the label to the encoder and the decoder, so z keeps the style while the label picks "
        "the digit. Checks: the discriminator ends near chance; a classifier reads the asked "
        "digit in the CVAE's samples. And z does carry the style: the same 100 draws of z are "
        "decoded under each label in turn, and the slant and stroke thickness of every decoded "
        "digit are measured as Morpho-MNIST defines them (Castro et al. 2019). With the label "
        "fixed, the slant still varies (its range below), a linear function of z predicts it "
        "(the R below; near 0 if z said nothing about it), and the classifier still reads the "
        "fixed label: the label says which digit, z how it is written."
    ),
    "aae_title": "AAE: test codes over samples of the mixture prior",
    "aae_caption": "The AAE's test codes (coloured by label) over its prior's samples (grey).",
    "class_grid_caption": "CVAE: rows are labels 0-9, each column one z (one style).",
    "style_caption": "CVAE style transfer: a test digit (left) and its z under every label.",
    "cvae_accuracy": "classifier accuracy on CVAE samples of the asked digit",
    "disc_accuracy": "AAE discriminator accuracy on test codes vs prior samples (0.5 = chance)",
    "aae_mmd": "MMD^2 between the AAE's test codes and as many prior samples of their labels' "
    "parts (Gaussian kernel)",
    "aae_mmd_floor": "the same MMD^2 between two such prior samples (what a perfect match gives)",
    "aae_mmd_bandwidth": "the kernel's bandwidth (median distance of the pooled points)",
    "cvae_slant_r": "CVAE, label fixed, z swept: R of a linear fit of the measured slant on z "
    "(mean over the 10 labels)",
    "cvae_thickness_r": "the same for the measured stroke thickness",
    "cvae_slant_spread": "slant range over the sweep under one label, 5th to 95th percentile "
    "(degrees, mean over the labels)",
    "cvae_sweep_accuracy": "classifier agreement with the fixed label over the sweep",
}

KO = {
    "report_title": "vaelab 투어: 계산으로 다시 보는 VAE 강의",
    "subtitle": "아래의 모든 그림과 숫자는 이번 실행에서 실제 MNIST 숫자로 계산한 것입니다.",
    "training": "투어용 {model} 학습 중 ({latent}차원 잠재 공간)...",
    "measuring": "측정하고 그리는 중...",
    "intro_title": "이 보고서를 읽는 법",
    "intro_text": (
        "강의의 흐름은 다음과 같습니다: 최대 가능도(MLE)와 최대 사후 확률(MAP), 정보량과 KL "
        "발산, 오토인코더(AE)와 변분 오토인코더(VAE), 증거 하한(ELBO), 2차원 잠재 공간을 가진 "
        "MNIST VAE 살펴보기, 그리고 적대적 오토인코더(AAE)와 조건부 VAE(CVAE).\n\n각 절은 "
        "주장을 말하고, 그림을 보여 주고, 그 주장을 확인하는 숫자를 제시합니다. 모델은 이 "
        "보고서를 위해 vaelab에 포함된 9,000개의 학습용 숫자로 학습했고 1,000개의 테스트 "
        "숫자로 평가했습니다. 학습 결과는 이 파일 옆의 models/ 폴더에 있습니다."
    ),
    "mle_title": "1. MLE와 MAP: 최소제곱과 릿지 회귀",
    "mle_text": (
        "주장: 잡음이 가우시안이면 선형 모델의 가능도를 최대화하는 것은 제곱 오차를 "
        "최소화하는 것과 같습니다 (음의 로그 가능도는 상수를 빼면 MSE입니다). 가중치에 평균 "
        "0인 가우시안 사전분포를 두고 사후 확률을 최대화(MAP)하면 lambda = sigma^2 / tau^2 인 "
        "릿지 회귀가 되고, 평평한 사전분포(tau -> 무한대)에서는 다시 MLE가 됩니다. 확인: 두 "
        "닫힌 해가 부동소수점 정밀도까지 일치하고, 음의 로그 사후 확률에 경사 하강법을 쓰면 "
        "릿지 해에 도달합니다."
    ),
    "fits_caption": "잡음 섞인 점 {n}개에 맞춘 {degree}차 다항식: 최소제곱(MLE)은 과적합하고 "
    "MAP(= 릿지)는 더 매끄럽습니다.",
    "shrinkage_caption": "사전분포가 좁아질수록(tau 감소) MAP 가중치는 0으로 줄어들고, tau가 "
    "커지면 최소제곱 가중치에 가까워집니다.",
    "nll_vs_mse": "|NLL - (N/(2 sigma^2) MSE + N/2 log(2 pi sigma^2))|",
    "map_vs_ridge": "max |w_MAP - w_릿지| (lambda = sigma^2/tau^2)",
    "gradient_vs_ridge": "max |w_경사하강 - w_릿지|",
    "lambda": "lambda = sigma^2 / tau^2",
    "flat_prior": "max |w_MAP(tau = 1e6) - w_MLE|",
    "info_title": "2. 정보량, 엔트로피, 교차 엔트로피, KL 발산",
    "info_text": (
        "주장: 확률 p인 사건은 -log2 p 비트의 정보를 가집니다. 엔트로피 H(P)는 그 평균이고, "
        "교차 엔트로피 H(P, Q)는 Q에 맞춘 부호로 P의 사건을 부호화할 때의 평균 비용입니다. "
        "KL(P || Q) = H(P, Q) - H(P) >= 0 이며, 일반적으로 KL(P || Q) != KL(Q || P) 입니다. "
        "VAE의 KL 항은 두 가우시안 사이의 닫힌 형태이며, 여기서 몬테카를로 추정과 비교합니다."
    ),
    "kl_caption": "두 분포 P와 Q, 그리고 양방향의 KL 발산.",
    "gauss_kl_closed": "가우시안 KL, 닫힌 형태 (nats)",
    "gauss_kl_mc": "가우시안 KL, 몬테카를로 (nats)",
    "gauss_kl_se": "그 표준오차",
    "paradox_title": "3. 픽셀 MSE가 이미지를 잘못 판단하는 이유",
    "paradox_text": (
        "주장: 픽셀별 제곱 오차는 닮음을 재는 좋은 척도가 아닙니다. 일부를 지운 숫자가 한 "
        "픽셀 옮긴 숫자보다 원본에 '더 가깝다'고 나올 수 있습니다. 옮긴 숫자가 분명히 같은 "
        "숫자인데도 말입니다. 그래서 VAE는 MSE 하나로 판단하지 않고 이미지 전체의 가능도 "
        "p(x|z)로 모델링합니다."
    ),
    "paradox_caption": "원본, 한 픽셀 이동, 일부 지움: 제목에 픽셀 MSE.",
    "paradox_fraction": "지운 이미지의 MSE가 더 작은 테스트 숫자의 비율",
    "paradox_shift_mse": "한 픽셀 이동의 평균 MSE",
    "paradox_erase_mse": "지운 이미지의 평균 MSE",
    "ae_vae_title": "4. 같은 숫자에서 본 AE와 VAE",
    "ae_vae_text": (
        "주장: 오토인코더는 압축만 합니다. 코드가 알려진 분포를 채우도록 하는 것이 없으므로 "
        "z ~ N(0, I)를 복원하면 대부분 숫자가 아닌 모양이 나옵니다. VAE는 q(z|x)를 사전분포 "
        "N(0, I)에 맞추므로 사전분포 표본이 숫자로 복원되고, 두 코드 사이의 경로도 숫자를 "
        "지나갑니다. 여기서 두 모델 모두 20차원 잠재 공간을 씁니다. 확인: 실제 숫자로 학습한 "
        "CNN 분류기가 두 모델의 사전분포 표본을 판정합니다."
    ),
    "ae_vae_samples_caption": "각 모델의 사전분포 표본 16개: 먼저 AE, 그다음 VAE.",
    "interpolation_caption": "두 테스트 숫자의 코드를 잇는 직선을 복원한 결과.",
    "ae_confidence": "AE 사전분포 표본에 대한 분류기 확신도 (최대 확률의 평균)",
    "vae_confidence": "VAE 사전분포 표본에 대한 분류기 확신도",
    "ae_confident_share": "확신도 0.9를 넘는 AE 표본의 비율",
    "vae_confident_share": "확신도 0.9를 넘는 VAE 표본의 비율",
    "elbo_title": "5. ELBO",
    "elbo_text": (
        "주장: log p(x) = ELBO + KL(q(z|x) || p(z|x)) 이므로, ELBO = E_q[log p(x|z)] - "
        "KL(q(z|x) || p(z)) 는 하한이고 그 차이는 인코더가 참 사후분포에서 얼마나 먼지를 "
        "나타냅니다. 확인: 테스트 이미지마다 중요도 표집으로 log p(x)를 추정하면 차이 "
        "log p(x) - ELBO 가 모든 이미지에서 양수입니다. 학습이 진행되면 복원 항은 줄고, KL 항은 "
        "정보를 담은 코드의 대가로 커집니다."
    ),
    "elbo_terms_caption": "학습 중 음의 ELBO의 두 항 (학습은 실선, 테스트는 점선).",
    "elbo_gap_caption": "테스트 이미지별 차이 KL(q(z|x) || p(z|x))의 추정값.",
    "mean_elbo": "평균 ELBO (이미지당 nats)",
    "mean_log_px": "평균 log p(x), 중요도 표집",
    "mean_gap": "평균 차이 = KL(q(z|x) || p(z|x))",
    "k_used": "이미지당 중요도 표본 수",
    "review_title": "6. 2차원 잠재 공간을 가진 MNIST VAE",
    "review_text": (
        "주장: 잠재 공간이 2차원이면 생성 모델 전체를 한눈에 볼 수 있습니다. 정규분포 분위수 "
        "격자를 복원하면 숫자들이 서로 변해 가는 모습이 보입니다. 매니폴드의 중심(z = 0)을 "
        "복원한 이미지는 모든 학습 이미지의 평균과 닮았고, 강의에서 본 것처럼 그 평균까지의 "
        "거리는 격자의 가장자리로 갈수록 커집니다. 클래스 평균 이미지는 흐릿하지만 클래스 "
        "평균 코드를 복원하면 또렷한 원형이 나옵니다."
    ),
    "manifold_caption": "정규분포 분위수 20 x 20 격자에서의 디코더 출력 (z1은 오른쪽, z2는 위).",
    "vae_explorer_title": "2차원 VAE 탐색: 평면을 끌어 복원하고, 숫자를 그려 부호화합니다 "
    "(모델은 이 페이지 안에서 실행됩니다)",
    "aae_explorer_title": "AAE의 잠재 공간 탐색",
    "cvae_explorer_title": "CVAE 탐색: 레이블을 고르고 z를 움직여 글씨체를 바꿉니다",
    "mean_vs_centre_caption": "학습 숫자들의 평균과 복원한 중심.",
    "distance_map_caption": "위 매니폴드의 각 칸을 평균 학습 이미지까지의 거리로 칠한 그림.",
    "class_means_caption": "숫자별: 테스트 이미지의 평균, 그리고 코드 평균을 복원한 이미지.",
    "scatter_caption": "1,000개의 테스트 숫자가 2차원 잠재 공간에 놓인 위치.",
    "recon_caption": "복원: 각 테스트 숫자의 사후 평균에서 디코더의 평균 출력.",
    "centre_distance": "복원한 중심 z = 0 과 평균 이미지 사이의 L2 거리",
    "corner_distance": "네 모서리 칸과 평균 이미지 사이의 평균 L2 거리",
    "min_distance": "격자에서 가장 작은 거리",
    "min_cell": "그 위치",
    "aae_cvae_title": "7. 적대적 오토인코더와 조건부 VAE",
    "aae_cvae_text": (
        "주장: AAE는 KL 항 대신 z 위의 판별기를 쓰므로 표본을 뽑을 수 있는 어떤 사전분포에도 "
        "맞출 수 있습니다. 여기서는 원 위에 놓인 가우시안 10개의 혼합이고, Makhzani 외의 "
        "그림 4처럼 레이블을 아는 방식입니다: 판별기도 레이블을 보고, 숫자 c의 코드는 성분 c에 "
        "맞춰지므로 숫자마다 자기 성분을 차지합니다. 얼마나 잘 맞는지는 숫자로 봅니다: 코드와 "
        "사전분포 표본 사이의 MMD를, 사전분포 표본 두 묶음 사이의 같은 통계량(완벽한 일치)과 "
        "나란히 둡니다. CVAE는 레이블을 "
        "인코더와 디코더에 함께 넣으므로 z는 글씨체를 담고 레이블이 숫자를 정합니다. 확인: "
        "판별기의 정확도는 우연 수준에 가깝고, 분류기가 CVAE 표본에서 요청한 숫자를 읽어 "
        "냅니다. 그리고 z는 실제로 글씨체를 담습니다: 같은 z 표본 100개를 레이블마다 차례로 "
        "복원하고, 복원한 숫자마다 Morpho-MNIST(Castro et al. 2019)의 정의대로 기울기와 획 "
        "굵기를 잽니다. 레이블을 고정해도 기울기는 달라지고(아래의 범위), z의 선형 함수가 그것을 "
        "예측하며(아래의 R; z가 아무 정보도 없다면 0에 가깝습니다), 분류기는 여전히 고정한 "
        "레이블을 읽어 냅니다: 레이블은 어떤 숫자인지를, z는 어떻게 썼는지를 정합니다."
    ),
    "aae_caption": "AAE의 테스트 코드(레이블별 색)와 사전분포 표본(회색).",
    "class_grid_caption": "CVAE: 행은 레이블 0-9, 각 열은 하나의 z (하나의 글씨체).",
    "style_caption": "CVAE 글씨체 전이: 테스트 숫자(왼쪽)와 그 z를 모든 레이블로 복원한 결과.",
    "cvae_accuracy": "요청한 숫자에 대한 CVAE 표본의 분류기 정확도",
    "disc_accuracy": "테스트 코드 대 사전분포 표본에 대한 AAE 판별기 정확도 (0.5 = 우연)",
    "aae_mmd": "AAE 테스트 코드와 같은 수의 (레이블에 맞는 성분의) 사전분포 표본 사이의 MMD^2 "
    "(가우시안 커널)",
    "aae_mmd_floor": "사전분포 표본 두 묶음 사이의 같은 MMD^2 (완벽히 맞을 때의 값)",
    "aae_mmd_bandwidth": "커널의 대역폭 (합친 점들 사이 거리의 중앙값)",
    "cvae_slant_r": "CVAE, 레이블 고정, z 변화: 측정한 기울기를 z로 선형 회귀한 R "
    "(레이블 10개의 평균)",
    "cvae_thickness_r": "측정한 획 굵기에 대한 같은 값",
    "cvae_slant_spread": "한 레이블에서 z를 바꿀 때 기울기의 범위, 5번째에서 95번째 백분위수 "
    "(도, 레이블 평균)",
    "cvae_sweep_accuracy": "z를 바꾼 표본에서 분류기가 고정한 레이블을 읽어 낸 비율",
}

# Figure labels stay English in both languages.
KO.update({k: v for k, v in EN.items() if k.endswith(("_title", "_xlabel", "_label")) and
           k not in KO})  # fmt: skip

TEXT = {"en": EN, "ko": KO}
LANGUAGES = tuple(TEXT)
