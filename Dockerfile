FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# A throwaway secret: collectstatic needs settings, not the production secret.
RUN DJANGO_SECRET_KEY=collectstatic-only DJANGO_DEBUG=false python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "crystallise_site.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
