# ifhe-lab demo: the Streamlit app on the shipped teacher. CPU image; for CUDA use a pytorch/pytorch base.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=2 \
    IFHE_THREADS=2 \
    IFHE_APP_RUNS=/home/ifhe/runs \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

RUN useradd --create-home --uid 10001 ifhe
WORKDIR /home/ifhe/app

# The CPU wheel keeps the image small; requirements.txt pins the CUDA build for workstations.
COPY requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && grep -v -E '^(torch|torchvision)==' requirements.txt > /tmp/req.txt \
 && pip install -r /tmp/req.txt

COPY --chown=ifhe:ifhe . .
RUN pip install --no-deps -e .

USER ifhe
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).status == 200 else 1)"

CMD ["python", "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--server.headless=true", "--server.maxUploadSize=50"]
